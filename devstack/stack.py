"""The whole local stack on loopback: Azurite, the Stripe and APIM emulators, and the Functions app.

One object starts everything in dependency order, wires the settings between the parts exactly
as they would be wired in Azure (the app only sees its documented settings), and stops it all.
Used by `make run`, `make demo` and the end-to-end tests (portal, browser, catalog, access).
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import shlex
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from decimal import ROUND_FLOOR, Decimal
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import requests

import function_app
from billing import model_loader
from billing.access.routing import HANDLED_EVENTS
from billing.adapters.storage import queue, queue_service, table_service
from billing.store.tables import ALL_QUEUES, ALL_TABLES
from billing.usage.meter_errors import THIN_EVENT_TYPES
from devhost.queues import QueuePoller
from devhost.server import DevHost
from devstack.azurite import Azurite
from devstack.consumer import DEFAULT_PASSWORD, Consumer, browser_session
from devstack.ports import free_port, wait_for_port
from devstack.process import ManagedProcess
from emulators.apim.server import ApimEmulator
from emulators.apim.state import DEFAULT_TIER
from emulators.mailbox import Mailbox
from emulators.stripe.server import StripeEmulator

REPO_ROOT = Path(__file__).resolve().parent.parent
# The API the models file's products sell ("apis": ["echo"]), called at {gateway}/echo/...
PROVIDER_API_ID = PROVIDER_API_PATH = "echo"
_Part = TypeVar("_Part")


@dataclass
class StackOptions:
    app_port: int = 0  # 0: a free port (`make run` asks for 7071, what `func start` uses)
    use_func: bool | None = None  # None: `func start` when Core Tools are on PATH, else the devhost
    stripe_port: int = 0
    apim_port: int = 0
    gateway_port: int = 0
    portal_port: int = 0
    # APIM's reports show a call this long after it was made; the app's USAGE_REPORT_LAG_MINUTES is set to
    # the same (in decimal minutes), so its pushes, closing reports and final invoices wait as long. Not 0
    # by default: usage arrives late in Azure too, and the app must be seen to wait for it.
    report_lag_seconds: float = 3
    apim_tier: str = DEFAULT_TIER  # the APIM pricing tier; BasicV2 / StandardV2 have no Reports API
    # Seconds before a gateway log row is queryable in the emulated Log Analytics workspace (the app's
    # default usage source). Below the app's lag, as the documented latency is below the default 30 min.
    log_ingestion_delay_seconds: float = 2
    stripe_faults: Any = None
    apim_faults: Any = None
    # False: nobody polls the queues in the background; `settle()` runs the queued work itself,
    # so an empty queue means no work is in flight (what the demo and exact tests need).
    run_queue_workers: bool = True
    # A running Azurite to use instead of starting one (tests share one per session); not stopped.
    azurite: Azurite | None = None
    # Apply payment/monetizationModels.json to Stripe and APIM at start (the app's catalog sync).
    apply_catalog: bool = False
    # False: Stripe has no webhook endpoint for the app, so access is never granted by webhooks.
    stripe_webhooks: bool = True
    webhook_secret: str = ""  # empty: a random one
    # A models file for the app instead of payment/monetizationModels.json (a test's own, the demo's with a
    # trial). The app in this process reads it; `func start` runs another process, so it runs on the devhost.
    models_file: Path | None = None


def _lag_minutes(seconds: float) -> str:
    """The app's USAGE_REPORT_LAG_MINUTES for the emulator's report lag: decimal minutes, rounded down to
    a millionth so that the app's rounding up to whole seconds gives the lag back (3 s -> "0.05")."""
    minutes = (Decimal(str(seconds)) / 60).quantize(Decimal("0.000001"), rounding=ROUND_FLOOR)
    return format(minutes.normalize(), "f")


class StackNotSettled(TimeoutError):
    """Webhooks or queued work still pending when `settle()` gave up."""


@dataclass
class LocalStack:
    options: StackOptions = field(default_factory=StackOptions)
    azurite: Azurite | None = None
    stripe: StripeEmulator | None = None
    apim: ApimEmulator | None = None
    mailbox: Mailbox | None = None  # the SMTP server the app's mails go to, with a page to read them
    app_host: DevHost | None = None  # when the app runs in this process
    func_process: ManagedProcess | None = None
    # The app's queue-triggered functions run by this process (devhost only): in the background
    # when `run_queue_workers`, else only when `settle()` (or a caller's `poll_once()`) runs them.
    queue_poller: QueuePoller | None = None
    env: dict[str, str] = field(default_factory=dict)  # the app settings, applied to os.environ
    delegation_key_b64: str = ""  # what APIM signs delegation links with
    webhook_endpoint_id: str = ""  # the app's endpoint in the Stripe emulator (when stripe_webhooks)
    _saved_env: dict[str, str | None] = field(default_factory=dict)
    _workdir: Path | None = None
    _own_azurite: bool = False
    _saved_models_path: Path | None = None

    @property
    def app_url(self) -> str:
        return f"http://127.0.0.1:{self._app_port}"

    def start(self) -> LocalStack:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        opts = self.options
        self._workdir = Path(tempfile.mkdtemp(prefix="localstack-"))
        self._app_port = opts.app_port or free_port()
        self._own_azurite = opts.azurite is None
        self.azurite = opts.azurite or Azurite().start()

        delegation_key = self.delegation_key_b64 = base64.b64encode(secrets.token_bytes(64)).decode("ascii")
        self.apim = ApimEmulator(
            opts.apim_port,
            opts.gateway_port,
            opts.portal_port,
            delegation_url=f"{self.app_url}/api/delegation",
            delegation_key_b64=delegation_key,
            report_lag_seconds=opts.report_lag_seconds,
            faults=opts.apim_faults,
            tier=opts.apim_tier,
            log_ingestion_delay_seconds=opts.log_ingestion_delay_seconds,
        ).start()
        webhook_secret = opts.webhook_secret or "whsec_" + secrets.token_hex(24)
        stripe_kwargs: dict[str, Any] = {"port": opts.stripe_port, "api_key": "sk_test_" + secrets.token_hex(12)}
        if opts.stripe_faults is not None:
            stripe_kwargs["faults"] = opts.stripe_faults
        self.stripe = StripeEmulator(**stripe_kwargs).start()
        event_destination_secret = ""
        if opts.stripe_webhooks:
            # Exactly the events docs/deploy.md subscribes the real endpoint to (HANDLED_EVENTS), so an event the
            # app needs but the docs leave out fails here as it would in Azure.
            endpoint = self.stripe.add_webhook_endpoint(
                f"{self.app_url}/api/webhooks/stripe", webhook_secret, enabled_events=sorted(HANDLED_EVENTS)
            )
            self.webhook_endpoint_id = endpoint.id
            # The thin events (meter error reports) go to an event destination of their own (docs/deploy.md).
            _, event_destination_secret = self.stripe.add_event_destination(
                f"{self.app_url}/api/webhooks/stripe-events", sorted(THIN_EVENT_TYPES), name="meter errors"
            )

        self.mailbox = Mailbox().start()
        self.env = {
            "AzureWebJobsStorage": self.azurite.connection_string,
            **self.mailbox.app_settings(),
            "MAIL_SENDER": "DoNotReply@portal.localhost",
            **self.stripe.app_settings(),
            "STRIPE_WEBHOOK_SECRET": webhook_secret,
            "STRIPE_EVENT_DESTINATION_SECRET": event_destination_secret,
            # Locally the emulator's summaries count an event at once: confirm right after each closing report.
            "USAGE_CONFIRM_DELAY_SECONDS": "0",
            **self.apim.app_settings(),  # with LOG_ANALYTICS_ENDPOINT and LOG_ANALYTICS_WORKSPACE_ID
            "APIM_DELEGATION_VALIDATION_KEY": delegation_key,
            "PORTAL_SESSION_KEYS": base64.b64encode(secrets.token_bytes(64)).decode("ascii"),
            "APP_BASE_URL": self.app_url,
            "DELEGATION_MODE": "full",
            "USAGE_REPORT_LAG_MINUTES": _lag_minutes(opts.report_lag_seconds),
        }
        self._apply_env(self.env)
        self._use_models_file(opts.models_file)
        self._ensure_storage()
        self._create_provider_api()
        if opts.apply_catalog:
            self._apply_catalog()
        use_func = (
            opts.use_func
            if opts.use_func is not None
            else (shutil.which("func") is not None and opts.models_file is None)
        )
        if use_func:
            self._start_func()
        else:
            self._start_devhost()

    def _apply_env(self, values: dict[str, str]) -> None:
        for key, value in values.items():
            self._saved_env.setdefault(key, os.environ.get(key))
            os.environ[key] = value

    def _use_models_file(self, path: Path | None) -> None:
        if path is None:
            return
        if self.options.use_func:
            raise ValueError("a models file of its own needs the app in this process: use_func=False")
        self._saved_models_path = model_loader.DEFAULT_MODELS_PATH
        model_loader.DEFAULT_MODELS_PATH = Path(path)

    def _ensure_storage(self) -> None:
        tables = table_service()
        for name in ALL_TABLES:
            tables.create_table_if_not_exists(name)
        queues = queue_service()
        existing = {q.name for q in queues.list_queues()}
        for name in ALL_QUEUES:
            for queue_name in (name, f"{name}-poison"):
                if queue_name not in existing:
                    queues.create_queue(queue_name)
                else:
                    # Left by an earlier stack on a shared Azurite (a delayed message, a failed test): its
                    # work names objects of emulators that are gone, and would run here.
                    queues.get_queue_client(queue_name).clear_messages()

    def _create_provider_api(self) -> None:
        """The API the provider sells, as it exists in their APIM before the catalog links products to it."""
        from azure.mgmt.apimanagement.models import ApiCreateOrUpdateParameter  # noqa: PLC0415

        apim = self.apim_emulator
        api = ApiCreateOrUpdateParameter(
            display_name="Echo API",
            path=PROVIDER_API_PATH,
            protocols=["https"],
            service_url="https://echo.backend.example",
            subscription_required=True,
        )
        apim.management_client().api.begin_create_or_update(
            apim.resource_group, apim.service_name, PROVIDER_API_ID, api
        ).result()

    def _apply_catalog(self) -> None:
        """Stripe products, prices, meters and APIM products, made by the app's own catalog sync."""
        from billing.bootstrap import services  # noqa: PLC0415 - only when asked for
        from billing.catalog.wiring import catalog_sync  # noqa: PLC0415

        sync = catalog_sync(services())
        sync.apply(sync.plan())

    def _start_devhost(self) -> None:
        self.app_host = DevHost(function_app.app, port=self._app_port).start()
        # As the Functions host does: run the queue-triggered functions, poison after 5 tries.
        self.queue_poller = QueuePoller(function_app.app, {name: queue(name) for name in ALL_QUEUES})
        if self.options.run_queue_workers:
            self.queue_poller.start()

    def _start_func(self) -> None:
        assert self._workdir is not None
        env = {**os.environ, **self.env, "FUNCTIONS_WORKER_RUNTIME": "python"}
        self.func_process = ManagedProcess(
            "func",
            ["func", "start", "--port", str(self._app_port)],
            log_path=self._workdir / "func.log",
            env=env,
            cwd=REPO_ROOT,
        ).start()
        wait_for_port(self._app_port, timeout=120, alive=self.func_process.running)

    def stop(self) -> None:
        workers = self.queue_poller if self.options.run_queue_workers else None
        azurite = self.azurite if self._own_azurite else None  # a shared one outlives this stack
        for part in (workers, self.app_host, self.func_process, self.stripe, self.apim, self.mailbox, azurite):
            if part is not None:
                with contextlib.suppress(Exception):  # stopping must go on for every other part
                    part.stop()
        self.queue_poller = self.app_host = self.func_process = self.stripe = self.apim = self.azurite = None
        self.mailbox = None
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved_env.clear()
        if self._saved_models_path is not None:
            model_loader.DEFAULT_MODELS_PATH = self._saved_models_path
            self._saved_models_path = None
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ---- for tests and the demo ----------------------------------------------------------------
    def settle(self, timeout: float = 60) -> None:
        """Wait until every webhook was delivered and every queued job of the app has run.

        With `run_queue_workers=False` the queued work runs here, synchronously, so "settled" is
        exact; a background poller could hold a message that an empty queue would not show.
        """
        stripe_emulator, poller = self.stripe_emulator, self.queue_poller
        deadline = time.monotonic() + timeout
        while True:
            stripe_emulator.wait_for_webhooks_idle(timeout=max(1.0, deadline - time.monotonic()))
            handled = poller.poll_once() if poller is not None and not self.options.run_queue_workers else 0
            if handled == 0 and stripe_emulator.core.deliverer.pending() == 0 and self._queues_empty():
                return
            if time.monotonic() > deadline:
                raise StackNotSettled(
                    f"the app did not settle within {timeout:.0f} s (webhooks or queued work still pending)"
                )
            if handled == 0:
                time.sleep(0.05)  # waiting on a delivery or a worker elsewhere, not on our own work

    def settle_delayed(self, timeout: float = 60) -> None:
        """`settle()`, then wait for messages queued with a visibility delay (a closing report or a final
        invoice waiting for the report lag) to come due and run, until no message is left at all.

        `settle()` cannot see those: a hidden message is not received. The queues' approximate message
        count includes hidden messages, so this polls it (and settles again) until it is 0.
        """
        deadline = time.monotonic() + timeout
        while True:
            self.settle(max(1.0, deadline - time.monotonic()))
            if self._queued_messages() == 0:
                return
            if time.monotonic() > deadline:
                raise StackNotSettled(f"queued work still waiting after {timeout:.0f} s")
            time.sleep(0.1)  # a hidden message comes due by the clock, not by anything to wait on

    def _queued_messages(self) -> int:
        return sum(queue(name).get_queue_properties().approximate_message_count or 0 for name in ALL_QUEUES)

    def _queues_empty(self) -> bool:
        if self.queue_poller is not None and not self.options.run_queue_workers:
            return True  # poll_once just found nothing
        return all(not queue(name).peek_messages(max_messages=1) for name in ALL_QUEUES)

    def browser(self) -> requests.Session:
        """A cookie-keeping HTTP client that asks for HTML, as a browser does."""
        return browser_session()

    def customer_on_test_clock(
        self, uid: str, email: str, frozen_time: int, name: str | None = None
    ) -> tuple[str, str]:
        """(clock id, customer id): the APIM user's Stripe customer, made ahead on a test clock (Stripe's
        way to test renewals) and kept in the app's customer directory, as if the app had made it."""
        from billing.store.customers import CustomerDirectory  # noqa: PLC0415 - the app's own store
        from billing.store.tables import CUSTOMERS_TABLE  # noqa: PLC0415

        stripe = self.stripe_emulator.client().v1
        clock = stripe.test_helpers.test_clocks.create(params={"frozen_time": frozen_time})
        params: dict[str, Any] = {"email": email, "test_clock": clock.id, "metadata": {"apim_user_id": uid}}
        if name:
            params["name"] = name
        customer = stripe.customers.create(params=params)  # type: ignore[arg-type]
        CustomerDirectory(table_service().get_table_client(CUSTOMERS_TABLE)).keep(uid, customer.id)
        return clock.id, customer.id

    def customer_of(self, uid: str) -> str | None:
        """The Stripe customer the app keeps for the APIM user (what the app acts on)."""
        from billing.store.customers import CustomerDirectory  # noqa: PLC0415
        from billing.store.tables import CUSTOMERS_TABLE  # noqa: PLC0415

        return CustomerDirectory(table_service().get_table_client(CUSTOMERS_TABLE)).get(uid)

    def consumer(
        self, email: str | None = None, password: str = DEFAULT_PASSWORD, name: str = "Ada Lovelace"
    ) -> Consumer:
        """A consumer with a fresh browser on this stack's portal (a new e-mail address unless given)."""
        address = email or f"dev-{uuid.uuid4().hex[:10]}@example.com"
        return Consumer(name, address, password, self.apim_emulator.portal_url, self.app_url, self.mail_server.web_url)

    @staticmethod
    def _running(part: _Part | None) -> _Part:
        if part is None:
            raise RuntimeError("the local stack is not running: start() it first")
        return part

    @property
    def stripe_emulator(self) -> StripeEmulator:
        """The running Stripe emulator (RuntimeError when the stack is stopped)."""
        return self._running(self.stripe)

    @property
    def apim_emulator(self) -> ApimEmulator:
        """The running APIM emulator (RuntimeError when the stack is stopped)."""
        return self._running(self.apim)

    @property
    def mail_server(self) -> Mailbox:
        """The running mailbox that receives the app's mails (RuntimeError when the stack is stopped)."""
        return self._running(self.mailbox)

    @property
    def dev_host(self) -> DevHost:
        """The in-process development host serving the app (RuntimeError under `func start`)."""
        return self._running(self.app_host)

    def settings_file(self) -> Path:
        """The stack's app settings as a POSIX sh file of exports (mode 0600), so that a terminal can run
        the app's CLI against the running stack: `. <file> && .venv/bin/python -m billing status`."""
        assert self._workdir is not None, "the stack is not running"
        path = self._workdir / "settings.sh"
        path.touch(mode=0o600)
        path.write_text(
            "".join(f"export {name}={shlex.quote(value)}\n" for name, value in sorted(self.env.items())),
            encoding="utf-8",
        )
        return path

    def urls(self) -> dict[str, str]:
        apim, stripe_emulator = self.apim_emulator, self.stripe_emulator
        return {
            "Functions app": f"{self.app_url}/api/health",
            "Readiness (each dependency)": f"{self.app_url}/api/health?ready=1",
            "Developer portal (APIM emulator)": apim.portal_url,
            "API gateway (APIM emulator)": apim.gateway_url,
            "Stripe emulator": stripe_emulator.base_url,
            "Mailbox (mails the app sent)": self.mail_server.web_url,
        }
