"""`ApimEmulator`: the management API (HTTPS), gateway and developer portal on loopback ports."""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any

from azure.identity import ClientSecretCredential
from azure.mgmt.apimanagement import ApiManagementClient

from emulators.apim.control import ControlApi
from emulators.apim.core import Clock, Emulated
from emulators.apim.entra import TokenIssuer
from emulators.apim.faults import Faults
from emulators.apim.gateway import Gateway
from emulators.apim.gatewaylog import GATEWAY_ERRORS
from emulators.apim.httpbase import LoopbackServer, Request, Response
from emulators.apim.management import LOCATION, ManagementApi
from emulators.apim.portal import Portal
from emulators.apim.state import (
    DEFAULT_PUBLISHER_EMAIL,
    DEFAULT_TIER,
    SUBSCRIPTION_STATES,
    TIERS,
    Store,
    Subscription,
    new_key,
)
from emulators.apim.tls import TlsFiles, make_tls_files
from emulators.loganalytics.limits import Limits
from emulators.loganalytics.server import DEFAULT_WORKSPACE_ID, LogAnalyticsServer
from emulators.loganalytics.store import DEFAULT_INGESTION_DELAY_SECONDS, LogStore, ServiceColumns, check_delay

DEFAULT_SUBSCRIPTION_ID = "00000000-0000-0000-0000-000000000000"
DEFAULT_TENANT_ID = "11111111-1111-1111-1111-111111111111"
DEFAULT_CLIENT_ID = "22222222-2222-2222-2222-222222222222"


class ApimEmulator:
    """One emulated API Management service. Ports of 0 are chosen free at start."""

    def __init__(
        self,
        management_port: int = 0,
        gateway_port: int = 0,
        portal_port: int = 0,
        *,
        delegation_url: str | None = None,
        delegation_key_b64: str | None = None,
        report_lag_seconds: float = 0,
        faults: Faults | dict[str, Any] | None = None,
        clock: Clock | None = None,
        subscription_id: str = DEFAULT_SUBSCRIPTION_ID,
        resource_group: str = "rg-apim-emulator",
        service_name: str = "apim-emulator",
        publisher_email: str = DEFAULT_PUBLISHER_EMAIL,
        tier: str = DEFAULT_TIER,
        log_analytics_port: int = 0,
        log_ingestion_delay_seconds: float = DEFAULT_INGESTION_DELAY_SECONDS,
        log_limits: Limits | None = None,
        workspace_id: str = DEFAULT_WORKSPACE_ID,
    ) -> None:
        """`publisher_email` is the administrator's e-mail given at service creation: user "1".
        `tier` is the pricing tier (sku.name): Developer, Basic, Standard, Premium, BasicV2 or StandardV2.
        The gateway's logs go to a Log Analytics workspace (`workspace_id`) served on `log_analytics_port`;
        a row is queryable `log_ingestion_delay_seconds` after its TimeGenerated (emulators/loganalytics)."""
        if tier not in TIERS:
            raise ValueError(f"tier must be one of {', '.join(TIERS)}, not {tier!r}")
        if report_lag_seconds < 0:
            raise ValueError(f"report_lag_seconds must be zero or more, not {report_lag_seconds}")
        check_delay(log_ingestion_delay_seconds)
        if isinstance(faults, dict):
            faults = Faults(**faults)
        self._ports = (management_port, gateway_port, portal_port)
        self._offset = timedelta(0)
        self._offset_lock = threading.Lock()
        self._injected_clock = clock
        created = (clock or self._offset_clock)()
        if created.tzinfo is None:
            raise ValueError("the emulator clock must return timezone-aware datetimes")
        self.emu = Emulated(
            subscription_id=subscription_id,
            resource_group=resource_group,
            service_name=service_name,
            tokens=TokenIssuer(DEFAULT_TENANT_ID, DEFAULT_CLIENT_ID),
            faults=faults or Faults(),
            clock=clock or self._offset_clock,
            report_lag_seconds=report_lag_seconds,
            # The administrator user "1" (in Administrators) and the built-in groups exist from the start.
            store=Store(publisher_email=publisher_email, created=created),
            tier=tier,
            created=created,
        )
        resource = (
            f"/subscriptions/{subscription_id}/resourcegroups/{resource_group}"
            f"/providers/microsoft.apimanagement/service/{service_name}"
        ).lower()
        self.emu.logs = LogStore(
            ServiceColumns(workspace_id, subscription_id, resource, LOCATION),
            GATEWAY_ERRORS,
            log_ingestion_delay_seconds,
        )
        # Bound to emu.now, so the workspace follows set_clock like the rest of the emulator.
        self.log_analytics = LogAnalyticsServer(
            self.emu.logs,
            clock=self.emu.now,
            tokens=self.emu.tokens,
            workspace_id=workspace_id,
            limits=log_limits,
            port=log_analytics_port,
        )
        settings = self.emu.store.delegation
        if delegation_url or delegation_key_b64:
            settings.url, settings.validation_key = delegation_url, delegation_key_b64
            settings.subscriptions_enabled = settings.user_registration_enabled = bool(
                delegation_url and delegation_key_b64
            )
        self.management = ManagementApi(self.emu)
        self.control = ControlApi(self.emu, None if clock else self.advance_clock)
        self.gateway = Gateway(self.emu, self.control)
        self.portal = Portal(self.emu)
        self._servers: list[LoopbackServer] = []
        self._workdir: Path | None = None
        self.tls: TlsFiles | None = None

    # Lifecycle ----------------------------------------------------------------------------------
    def start(self) -> ApimEmulator:
        if self._servers:
            return self
        self._workdir = Path(tempfile.mkdtemp(prefix="apim-emulator-"))
        self.tls = make_tls_files(self._workdir)
        tls = (str(self.tls.server_cert), str(self.tls.server_key))
        try:
            for app, port, use_tls in (
                (self._management_app, self._ports[0], True),
                (self.gateway.handle, self._ports[1], False),
                (self.portal.handle, self._ports[2], False),
            ):
                server = LoopbackServer(app, port, tls=tls if use_tls else None)
                self._servers.append(server)
                server.start()
            self.log_analytics.start(tls)
        except OSError:
            self.stop()
            raise
        # The service resource (GET .../service/{name}) names its gateway and developer portal URLs.
        self.emu.gateway_url, self.emu.portal_url = self._servers[1].url, self._servers[2].url
        return self

    def stop(self) -> None:
        """Stop every server. The workspace's rows go too: a stopped emulator cannot be started again."""
        self.log_analytics.stop()
        self._logs.close()
        for server in self._servers:
            server.stop()
        self._servers = []
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def __enter__(self) -> ApimEmulator:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _management_app(self, req: Request) -> Response:
        if req.path.startswith("/_emulator/"):
            return self.control.handle(req)
        if self.emu.tokens.handles(req.path):
            return self.emu.tokens.handle(req)
        return self.management.handle(req)

    # Addresses and settings ---------------------------------------------------------------------
    def _server(self, index: int) -> LoopbackServer:
        if not self._servers:
            raise RuntimeError("the APIM emulator is not running; call start() first")
        return self._servers[index]

    @property
    def management_url(self) -> str:
        return self._server(0).url

    @property
    def gateway_url(self) -> str:
        return self._server(1).url

    @property
    def portal_url(self) -> str:
        return self._server(2).url

    @property
    def ca_bundle(self) -> str:
        """PEM file with the public roots plus the emulator's CA (use as REQUESTS_CA_BUNDLE)."""
        self._server(0)
        assert self.tls is not None
        return str(self.tls.ca_bundle)

    @property
    def subscription_id(self) -> str:
        return self.emu.subscription_id

    @property
    def resource_group(self) -> str:
        return self.emu.resource_group

    @property
    def service_name(self) -> str:
        return self.emu.service_name

    @property
    def tier(self) -> str:
        """The pricing tier (the service resource's sku.name)."""
        return self.emu.tier

    @property
    def publisher_email(self) -> str:
        """The administrator's e-mail (user "1"), as given at creation."""
        return self.emu.store.publisher_email

    def app_settings(self) -> dict[str, str]:
        """Environment for the app: the APIM coordinates plus App Service managed-identity variables.

        `DefaultAzureCredential()` / `ManagedIdentityCredential()` then get tokens from the emulator
        exactly as they do from the Functions host in Azure, and `REQUESTS_CA_BUNDLE` makes the
        emulator's HTTPS certificate trusted.
        """
        settings = {
            "APIM_MANAGEMENT_ENDPOINT": self.management_url,
            "APIM_SUBSCRIPTION_ID": self.subscription_id,
            "APIM_RESOURCE_GROUP": self.resource_group,
            "APIM_SERVICE_NAME": self.service_name,
            "APIM_GATEWAY_URL": self.gateway_url,
            "APIM_DEVELOPER_PORTAL_URL": self.portal_url,
            "IDENTITY_ENDPOINT": f"{self.management_url}/msi/token",
            "IDENTITY_HEADER": self.emu.tokens.identity_header,
            "REQUESTS_CA_BUNDLE": self.ca_bundle,
            # LogsQueryClient(credential, endpoint=LOG_ANALYTICS_ENDPOINT): its token audience defaults to the
            # endpoint, which the emulator accepts, as the real API accepts https://api.loganalytics.io.
            "LOG_ANALYTICS_ENDPOINT": self.log_analytics.endpoint,
            "LOG_ANALYTICS_WORKSPACE_ID": self.log_analytics.workspace_id,
        }
        delegation = self.emu.store.delegation
        if delegation.validation_key:
            settings["APIM_DELEGATION_VALIDATION_KEY"] = delegation.validation_key
        return settings

    def client_secret_credential(self) -> ClientSecretCredential:
        """A service-principal credential against the emulator's Entra endpoints (no env needed)."""
        tokens = self.emu.tokens
        return ClientSecretCredential(
            tokens.tenant_id,
            tokens.client_id,
            tokens.client_secret,
            authority=self.management_url,
            disable_instance_discovery=True,  # MSAL would otherwise ask login.microsoftonline.com
            connection_verify=self.ca_bundle,
        )

    def management_client(self, **kwargs: Any) -> ApiManagementClient:
        """The real `ApiManagementClient`, pointed at the emulator with `base_url`."""
        kwargs.setdefault("connection_verify", self.ca_bundle)
        return ApiManagementClient(
            self.client_secret_credential(), self.subscription_id, base_url=self.management_url, **kwargs
        )

    # Time and usage -----------------------------------------------------------------------------
    def _offset_clock(self) -> datetime:
        with self._offset_lock:
            return datetime.now(UTC) + self._offset

    def set_clock(self, clock: Clock) -> None:
        """Replace the clock used for quotas, rate limits, report lag and record timestamps."""
        self.emu.clock = clock
        self.control._advance_clock = None

    def advance_clock(self, seconds: float) -> None:
        """Move the default (system + offset) clock forward; not available once a clock is injected."""
        if self.emu.clock != self._offset_clock:
            raise RuntimeError("a clock was injected; advance that clock instead")
        with self._offset_lock:
            self._offset += timedelta(seconds=seconds)

    def now(self) -> datetime:
        return self.emu.now()

    def record_usage(self, subscription_id: str, calls: int, *, at: datetime, outcome: str = "success") -> None:
        """Record `calls` synthetic calls for an existing subscription at `at`: one aggregate event for the
        Reports API, and `calls` ApiManagementGatewayLogs rows (status codes of the outcome class)."""
        self.emu.record_usage(subscription_id, calls, at, outcome)

    # The Log Analytics workspace ----------------------------------------------------------------
    @property
    def workspace_id(self) -> str:
        return self.log_analytics.workspace_id

    @property
    def log_analytics_endpoint(self) -> str:
        """https://127.0.0.1:{port}/v1: the `endpoint` for LogsQueryClient."""
        return self.log_analytics.endpoint

    @property
    def log_ingestion_delay_seconds(self) -> float:
        return self._logs.ingestion_delay_seconds

    @log_ingestion_delay_seconds.setter
    def log_ingestion_delay_seconds(self, value: float) -> None:
        check_delay(value)
        self._logs.ingestion_delay_seconds = value

    @contextmanager
    def logs_arrive_late(self, seconds: float, *, subscription_id: str | None = None) -> Iterator[None]:
        """Gateway calls and `record_usage` inside the block (of one subscription, or all) reach the workspace
        `seconds` after the usual ingestion delay: rows that arrive late."""
        with self._logs.late_by(seconds, subscription_id=subscription_id):
            yield

    @property
    def _logs(self) -> LogStore:
        assert self.emu.logs is not None
        return self.emu.logs

    def bulk_create_subscriptions(
        self, sids: Iterable[str], *, product_id: str, owner_id: str | None = None, state: str = "active"
    ) -> None:
        """Seed many subscriptions at once for load tests (the product and owner must exist).

        Equivalent to one `subscription.create_or_update` per sid, without 100,000 HTTP requests.
        """
        store, now = self.emu.store, self.emu.now()
        if state not in SUBSCRIPTION_STATES:
            raise ValueError(f"state must be one of {', '.join(SUBSCRIPTION_STATES)}, not {state!r}")
        with store.lock:
            if product_id not in store.products:
                raise LookupError(f"no product named {product_id!r}; create it first")
            if owner_id is not None and owner_id not in store.users:
                raise LookupError(f"no user named {owner_id!r}; create it first")
            for sid in sids:
                store.put_subscription(
                    Subscription(
                        sid=sid,
                        owner_uid=owner_id,
                        scope=f"/products/{product_id}",
                        display_name=sid,
                        state=state,
                        primary_key=new_key(),
                        secondary_key=new_key(),
                        created_date=now,
                        start_date=now if state == "active" else None,
                    )
                )

    @property
    def faults(self) -> Faults:
        return self.emu.faults

    @property
    def report_lag_seconds(self) -> float:
        return self.emu.report_lag_seconds

    @report_lag_seconds.setter
    def report_lag_seconds(self, value: float) -> None:
        if value < 0:
            raise ValueError(f"report_lag_seconds must be zero or more, not {value}")
        self.emu.report_lag_seconds = value
