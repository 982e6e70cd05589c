"""Fault injection (set per run and at run time) and the command line entry point."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests
import stripe

from devstack.ports import free_port, wait_for_port
from emulators.stripe.faults import FaultSettings
from emulators.stripe.server import StripeEmulator
from emulators.stripe.testing import WebhookSink

ROOT = Path(__file__).resolve().parents[3]


def _set_faults(emulator: StripeEmulator, **changes: Any) -> dict[str, Any]:
    response = requests.post(f"{emulator.base_url}/_emulator/faults", json=changes, timeout=10)
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_injected_500_and_429_reach_the_sdk_as_stripe_errors(stripe_emulator: StripeEmulator, client: Any) -> None:
    _set_faults(stripe_emulator, error_rate_500=1.0)
    with pytest.raises(stripe.APIError) as server_error:
        client.v1.customers.list()
    assert server_error.value.http_status == 500
    _set_faults(stripe_emulator, error_rate_500=0.0, error_rate_429=1.0)
    with pytest.raises(stripe.RateLimitError):
        client.v1.customers.list()
    _set_faults(stripe_emulator, error_rate_429=0.0)
    assert client.v1.customers.list().data == []
    assert requests.get(f"{stripe_emulator.base_url}/_emulator/health", timeout=10).json()["status"] == "ok"


def test_rate_limit_answers_429_beyond_the_budget(stripe_emulator: StripeEmulator, client: Any) -> None:
    _set_faults(stripe_emulator, rate_limit=1)
    outcomes = []
    for _ in range(10):
        try:
            client.v1.customers.list()
            outcomes.append("ok")
        except stripe.RateLimitError as exc:
            body = exc.json_body
            assert isinstance(body, dict)
            outcomes.append(body["error"]["code"])
    assert outcomes[0] == "ok"
    assert "rate_limit" in outcomes


def test_fault_settings_refuse_unknown_names(stripe_emulator: StripeEmulator) -> None:
    response = requests.post(f"{stripe_emulator.base_url}/_emulator/faults", json={"chaos": 1}, timeout=10)
    assert response.status_code == 400
    assert "chaos" in response.json()["error"]["message"]


def test_duplicate_webhook_deliveries(sink: WebhookSink) -> None:
    with StripeEmulator(faults=FaultSettings(duplicate_webhooks=1.0, reorder_webhooks=True, seed=7)) as emulator:
        emulator.add_webhook_endpoint(sink.url, "whsec_x")
        emulator.client().v1.customers.create(params={"email": "a@example.com"})
        emulator.wait_for_webhooks_idle(timeout=10)
        assert requests.get(f"{emulator.base_url}/_emulator/webhooks/pending", timeout=10).json() == {"pending": 0}
    ids = [r.event["id"] for r in sink.received]
    assert len(ids) == 2
    assert len(set(ids)) == 1


def test_cli_serves_until_sigterm() -> None:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "emulators.stripe",
            "--port",
            str(port),
            "--api-key",
            "sk_test_cli",
            "--error-rate-500",
            "0",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_port(port, timeout=20, alive=lambda: process.poll() is None)
        client = stripe.StripeClient("sk_test_cli", base_addresses={"api": f"http://127.0.0.1:{port}"})
        assert client.v1.customers.create(params={"email": "cli@example.com"}).id.startswith("cus_")
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=20)
    assert process.returncode == 0, err
    assert "stopped" in out


def test_cli_rejects_bad_options() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "emulators.stripe", "--port", "0", "--error-rate-429", "2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert result.returncode == 2
    assert "fraction" in result.stderr
    assert "Traceback" not in result.stderr
