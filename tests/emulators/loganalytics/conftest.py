"""Fixtures for the Log Analytics emulator's tests: an APIM emulator on a manual clock, its workspace reached
the app's way (the environment from `app_settings()`, DefaultAzureCredential, the real LogsQueryClient)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from azure.identity import DefaultAzureCredential
from azure.monitor.query import LogsQueryClient, LogsQueryResult

from emulators.apim.server import ApimEmulator
from tests.emulators.apim.conftest import Apim, ManualClock

START = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
# "Resource logs are usually available within 3 to 10 minutes end-to-end" (data-ingestion-time.md).
DOCUMENTED_LATENCY = timedelta(minutes=10)


@dataclass
class Workspace:
    """The APIM emulator, its management client and the app's view of the workspace."""

    apim: Apim
    clock: ManualClock
    logs: LogsQueryClient

    @property
    def emu(self) -> ApimEmulator:
        return self.apim.emu

    def query(self, kql: str, **kwargs: Any) -> list[dict[str, Any]]:
        """The first table's rows as dicts; fails the test on a partial result."""
        result = self.logs.query_workspace(self.emu.workspace_id, kql, timespan=kwargs.pop("timespan", None), **kwargs)
        assert isinstance(result, LogsQueryResult), getattr(result, "partial_error", result)
        table = result.tables[0]
        return [dict(zip(table.columns, row, strict=True)) for row in table.rows]

    def settle(self) -> None:
        """Move the clock past the documented ingestion latency, so every row so far is queryable."""
        self.clock.advance(seconds=DOCUMENTED_LATENCY.total_seconds())

    def call(self, path: str, key: str | None = None, **headers: str) -> int:
        """A gateway call (the key in the APIM header); its status."""
        if key is not None:
            headers["Ocp-Apim-Subscription-Key"] = key
        return requests.get(f"{self.emu.gateway_url}{path}", headers=headers, timeout=10).status_code

    def raw(self, body: dict[str, Any] | None = None, **headers: str) -> requests.Response:
        """POST to the query endpoint without the SDK (for answers the SDK turns into exceptions)."""
        url = f"{self.emu.log_analytics_endpoint}/workspaces/{self.emu.workspace_id}/query"
        return requests.post(
            url,
            json=body or {"query": "ApiManagementGatewayLogs | count"},
            headers=headers,
            verify=self.emu.ca_bundle,
            timeout=30,
        )


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def make_workspace(clock: ManualClock, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Workspace]]:
    """Start an APIM emulator (keyword arguments as ApimEmulator's) and point the app's environment at it."""
    started: list[tuple[ApimEmulator, Any, LogsQueryClient]] = []

    def make(**kwargs: Any) -> Workspace:
        emu = ApimEmulator(clock=clock, **kwargs).start()
        for name in ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET", "AZURE_FEDERATED_TOKEN_FILE"):
            monkeypatch.delenv(name, raising=False)
        for name, value in emu.app_settings().items():
            monkeypatch.setenv(name, value)
        client = emu.management_client(retry_total=0)
        # The app's construction: the endpoint from LOG_ANALYTICS_ENDPOINT, the default credential chain.
        # No retries, so a test that provokes a 429 sees it instead of sleeping through Retry-After.
        logs = LogsQueryClient(
            DefaultAzureCredential(exclude_interactive_browser_credential=True),
            endpoint=emu.app_settings()["LOG_ANALYTICS_ENDPOINT"],
            retry_total=0,
        )
        started.append((emu, client, logs))
        return Workspace(Apim(emu, client), clock, logs)

    yield make
    for emu, client, logs in started:
        logs.close()
        client.close()
        emu.stop()


@pytest.fixture
def workspace(make_workspace: Callable[..., Workspace]) -> Workspace:
    return make_workspace()
