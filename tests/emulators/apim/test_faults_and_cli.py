"""Fault injection on the management API, and the command line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import requests
from azure.core.exceptions import HttpResponseError
from azure.identity import ManagedIdentityCredential
from azure.mgmt.apimanagement import ApiManagementClient
from azure.mgmt.apimanagement import models as m

from devstack.ports import free_port, wait_for_port
from tests.emulators.apim.conftest import Apim

REPO = Path(__file__).resolve().parents[3]


def test_injected_429_carries_retry_after(apim: Apim) -> None:
    apim.emu.faults.update({"error_rate_429": 1.0, "retry_after_seconds": 7})
    captured: list[str] = []
    with pytest.raises(HttpResponseError) as err:
        apim.client.product.get(
            apim.rg, apim.svc, "x", raw_response_hook=lambda r: captured.append(r.http_response.headers["Retry-After"])
        )
    assert err.value.status_code == 429
    assert captured == ["7"]
    apim.emu.faults.update({"error_rate_429": 0.0})
    apim.product("x")  # served again


def test_injected_500_and_control_endpoint(apim: Apim) -> None:
    url = f"{apim.emu.gateway_url}/_emulator/faults"
    assert requests.post(url, json={"error_rate_500": 1.0}, timeout=10).json()["error_rate_500"] == 1.0
    with pytest.raises(HttpResponseError) as err:
        next(iter(apim.client.product.list_by_service(apim.rg, apim.svc)))
    assert err.value.status_code == 500
    rejected = requests.post(url, json={"error_rate_500": 2}, timeout=10)
    assert rejected.status_code == 400
    assert "error_rate_500" in rejected.json()["error"]["message"]
    requests.post(url, json={"error_rate_500": 0}, timeout=10)
    assert list(apim.client.product.list_by_service(apim.rg, apim.svc)) == []


def test_client_retries_through_partial_throttling(apim: Apim) -> None:
    """With the SDK's default retry policy, seeded 50 % throttling with Retry-After 0 still succeeds."""
    apim.emu.faults.update({"error_rate_429": 0.5, "retry_after_seconds": 0, "seed": 4})
    with apim.emu.management_client(retry_backoff_factor=0, retry_status=20) as client:
        for i in range(5):
            client.product.create_or_update(apim.rg, apim.svc, f"p{i}", m.ProductContract(display_name="P"))
    apim.emu.faults.update({"error_rate_429": 0.0})
    assert len(list(apim.client.product.list_by_service(apim.rg, apim.svc))) == 5


def test_cli_serves_and_stops_on_sigterm(monkeypatch: pytest.MonkeyPatch) -> None:
    ports = [free_port() for _ in range(3)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "emulators.apim",
            "--port",
            str(ports[0]),
            "--gateway-port",
            str(ports[1]),
            "--portal-port",
            str(ports[2]),
            "--error-rate-429",
            "0",
            "--publisher-email",
            "owner@contoso.com",
            "--tier",
            "StandardV2",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for port in ports:
            wait_for_port(port, timeout=30, alive=lambda: proc.poll() is None)
        assert proc.stdout is not None
        lines: list[str] = []
        while not lines or lines[-1] != "}\n":  # the JSON object the CLI prints once it listens
            line = proc.stdout.readline()
            assert line, f"the CLI exited early: {proc.stderr.read() if proc.stderr else ''}"
            lines.append(line)
        printed = json.loads("".join(lines))
        settings = printed["app_settings"]
        assert printed["gateway_url"] == f"http://127.0.0.1:{ports[1]}"
        # The app's own way in, in another process: managed identity from the environment.
        monkeypatch.setenv("IDENTITY_ENDPOINT", settings["IDENTITY_ENDPOINT"])
        monkeypatch.setenv("IDENTITY_HEADER", settings["IDENTITY_HEADER"])
        credential = ManagedIdentityCredential(connection_verify=settings["REQUESTS_CA_BUNDLE"])
        with ApiManagementClient(
            credential,
            settings["APIM_SUBSCRIPTION_ID"],
            base_url=settings["APIM_MANAGEMENT_ENDPOINT"],
            connection_verify=settings["REQUESTS_CA_BUNDLE"],
        ) as client:
            created = client.product.create_or_update(
                settings["APIM_RESOURCE_GROUP"], settings["APIM_SERVICE_NAME"], "p", m.ProductContract(display_name="P")
            )
            admin = client.user.get(settings["APIM_RESOURCE_GROUP"], settings["APIM_SERVICE_NAME"], "1")
            service = client.api_management_service.get(settings["APIM_RESOURCE_GROUP"], settings["APIM_SERVICE_NAME"])
        assert created.name == "p"
        assert admin.email == "owner@contoso.com"
        assert (service.sku.name, service.gateway_url) == ("StandardV2", settings["APIM_GATEWAY_URL"])
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_rejects_bad_arguments() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "emulators.apim", "--error-rate-429", "1.5"],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "error_rate_429" in result.stderr
    assert "Traceback" not in result.stderr
    result = subprocess.run(
        [sys.executable, "-m", "emulators.apim", "--publisher-email", "nobody"],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "publisher_email" in result.stderr
    result = subprocess.run(
        [sys.executable, "-m", "emulators.apim", "--tier", "Consumption"],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "--tier: invalid choice: 'Consumption'" in result.stderr


def test_clock_control_endpoint_moves_the_default_clock(apim: Apim) -> None:
    url = f"{apim.emu.gateway_url}/_emulator/clock"
    before = apim.emu.now()
    moved = requests.post(url, json={"advance_seconds": 86_400}, timeout=10).json()["now"]
    assert datetime.fromisoformat(moved) - before >= timedelta(days=1)
    assert requests.post(url, json={"advance_seconds": -5}, timeout=10).status_code == 400
