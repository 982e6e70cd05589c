"""The v2 tiers (no Reports API, logs only) and the command line's Log Analytics options."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from azure.core.exceptions import HttpResponseError
from azure.identity import ManagedIdentityCredential

from devstack.ports import free_port, wait_for_port
from tests.emulators.loganalytics.conftest import START, Workspace

REPO = Path(__file__).resolve().parents[3]
WINDOW = "timestamp ge datetime'2026-12-01T00:00:00' and timestamp le datetime'2026-12-02T00:00:00'"


@pytest.mark.parametrize("tier", ["BasicV2", "StandardV2"])
def test_v2_tiers_have_no_reports_but_their_gateway_logs_are_queryable(
    make_workspace: Callable[..., Workspace], tier: str
) -> None:
    ws = make_workspace(tier=tier)
    ws.apim.product("payg")
    ws.apim.user("u1")
    ws.apim.subscription("s1", "payg", "u1")
    assert ws.call("/echo/x", ws.apim.key("s1")) == 200
    with pytest.raises(HttpResponseError) as refused:
        list(ws.apim.client.reports.list_by_subscription(ws.apim.rg, ws.apim.svc, WINDOW))
    assert refused.value.status_code == 400
    assert refused.value.error is not None
    assert refused.value.error.code == "MethodNotAllowedInPricingTier"
    assert tier in str(refused.value.error.message)
    ws.settle()
    rows = ws.query("ApiManagementGatewayLogs | project ApimSubscriptionId, ResponseCode, TimeGenerated")
    assert rows == [{"ApimSubscriptionId": "s1", "ResponseCode": 200, "TimeGenerated": START}]


def test_classic_tiers_keep_their_reports(workspace: Workspace) -> None:
    workspace.apim.product("payg")
    workspace.apim.user("u1")
    workspace.apim.subscription("s1", "payg", "u1")
    workspace.emu.record_usage("s1", 5, at=START)
    records = list(workspace.apim.client.reports.list_by_subscription(workspace.apim.rg, workspace.apim.svc, WINDOW))
    assert [(r.subscription_id, r.call_count_success) for r in records] == [("/subscriptions/s1", 5)]


def test_cli_serves_the_workspace_on_the_port_and_delay_it_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "emulators.apim",
            "--log-analytics-port",
            str(port),
            "--log-ingestion-delay-seconds",
            "0",
            "--tier",
            "BasicV2",
        ],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_port(port, timeout=30, alive=lambda: proc.poll() is None)
        assert proc.stdout is not None
        lines: list[str] = []
        while not lines or lines[-1] != "}\n":
            line = proc.stdout.readline()
            assert line, "the CLI exited early"
            lines.append(line)
        settings = json.loads("".join(lines))["app_settings"]
        assert settings["LOG_ANALYTICS_ENDPOINT"] == f"https://127.0.0.1:{port}/v1"
        monkeypatch.setenv("IDENTITY_ENDPOINT", settings["IDENTITY_ENDPOINT"])
        monkeypatch.setenv("IDENTITY_HEADER", settings["IDENTITY_HEADER"])
        credential = ManagedIdentityCredential(connection_verify=settings["REQUESTS_CA_BUNDLE"])
        token = credential.get_token("https://api.loganalytics.io/.default").token
        url = f"{settings['LOG_ANALYTICS_ENDPOINT']}/workspaces/{settings['LOG_ANALYTICS_WORKSPACE_ID']}/query"
        answer = requests.post(
            url,
            json={"query": "ApiManagementGatewayLogs | count"},
            timeout=30,
            headers={"Authorization": f"Bearer {token}"},
            verify=settings["REQUESTS_CA_BUNDLE"],
        )
        assert answer.status_code == 204  # a new workspace has no data
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_rejects_a_negative_ingestion_delay() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "emulators.apim", "--log-ingestion-delay-seconds", "-1"],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "ingestion delay" in result.stderr
    assert "Traceback" not in result.stderr
