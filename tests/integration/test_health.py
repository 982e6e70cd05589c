"""GET /api/health through the FunctionApp object and over HTTP through the development host."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import azure.functions as func
import pytest
import requests

import function_app
from billing import __version__, config
from devhost.indexing import function_named
from devhost.server import DevHost
from devstack.ports import free_port, wait_for_port

REPO = Path(__file__).resolve().parents[2]
REQUIRED = sorted(s.name for s in config.SETTINGS if s.required)


@pytest.fixture
def complete_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    values = {name: f"value-of-{name}" for name in REQUIRED}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


@pytest.fixture
def devhost() -> Iterator[DevHost]:
    with DevHost(function_app.app, port=free_port()) as host:
        yield host


def test_health_through_function_app_object(complete_env: dict[str, str]) -> None:
    response = function_named(function_app.app, "health").get_user_function()(
        func.HttpRequest("GET", "/api/health", body=b"")
    )
    assert response.status_code == 200
    body = json.loads(response.get_body())
    closing = body.pop("closingReport")
    assert body == {"status": "ok", "version": __version__, "missingSettings": [], "invalidSettings": []}
    # With the defaults: 30 min of report lag, then a confirmation 15 min on and a second read 5 min after
    # that, each step up to a minute late from queue polling (3 steps): 30 + 15 + 5 + 3 = 53 minutes.
    assert (closing["waitsForUsageDataSeconds"], closing["needsDraftWindowMinutes"]) == (1800, 53)
    # Stripe's API does not expose the grace period: health says it cannot check it, and what is checked.
    assert "not readable at start" in closing["draftWindow"]
    assert "automatically_finalizes_at" in closing["draftWindow"]


def test_health_names_invalid_timing_settings_never_values(
    complete_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, devhost: DevHost
) -> None:
    monkeypatch.setenv("USAGE_REPORT_LAG_MINUTES", "half an hour")
    monkeypatch.setenv("USAGE_CONFIRM_DELAY_SECONDS", "600")
    response = requests.get(f"{devhost.base_url}/api/health", timeout=10)
    assert response.status_code == 503
    body = response.json()
    assert (body["status"], body["invalidSettings"]) == ("misconfigured", ["USAGE_REPORT_LAG_MINUTES"])
    assert "half an hour" not in response.text
    monkeypatch.setenv("USAGE_REPORT_LAG_MINUTES", "0.5")  # decimal minutes: 30 s
    body = requests.get(f"{devhost.base_url}/api/health", timeout=10).json()
    assert body["invalidSettings"] == []
    # 30 s + 600 s + 200 s + 180 s of queue polling = 1,010 s: 17 minutes, rounded up.
    assert (body["closingReport"]["waitsForUsageDataSeconds"], body["closingReport"]["needsDraftWindowMinutes"]) == (
        30,
        17,
    )


def test_health_names_missing_settings_never_values(
    complete_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, devhost: DevHost
) -> None:
    monkeypatch.delenv("STRIPE_API_KEY")
    monkeypatch.setenv("APIM_SERVICE_NAME", "   ")
    response = requests.get(f"{devhost.base_url}/api/health", timeout=10)
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "misconfigured"
    assert body["missingSettings"] == ["STRIPE_API_KEY", "APIM_SERVICE_NAME"]
    for value in complete_env.values():
        assert value not in response.text


def test_identity_based_storage_counts_as_configured(
    complete_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AzureWebJobsStorage")
    monkeypatch.setenv("AzureWebJobsStorage__accountName", "stbilling")
    assert config.missing_settings() == []


def test_devhost_routing_errors(devhost: DevHost) -> None:
    assert requests.post(f"{devhost.base_url}/api/health", timeout=10).status_code == 405
    assert requests.get(f"{devhost.base_url}/api/nothing-here", timeout=10).status_code == 404
    assert requests.get(f"{devhost.base_url}/health", timeout=10).status_code == 404


def test_make_run_devhost_process_serves_and_stops(complete_env: dict[str, str]) -> None:
    port = free_port()
    env = {**os.environ, **complete_env}
    proc = subprocess.Popen(
        [sys.executable, "-m", "devhost", "--port", str(port), "--settings", "/nonexistent"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port, timeout=30, alive=lambda: proc.poll() is None)
        response = requests.get(f"http://127.0.0.1:{port}/api/health", timeout=10)
        assert response.json()["status"] == "ok"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0


def test_unresolved_key_vault_reference_counts_as_missing(
    complete_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    unresolved = "@Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net/secrets/stripe-api-key/)"
    monkeypatch.setenv("STRIPE_API_KEY", unresolved)
    assert config.missing_settings() == ["STRIPE_API_KEY"]
    assert config.get("STRIPE_API_KEY") == ""
