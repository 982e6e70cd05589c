"""The whole local stack on loopback: Azurite, the Stripe and APIM emulators, and the Functions app.

One object starts everything in dependency order, wires the settings between the parts exactly
as they would be wired in Azure (the app only sees its documented settings), and stops it all.
Used by `make run`, `make demo` and end-to-end tests.
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import function_app
from billing.adapters.storage import queue, queue_service, table_service
from billing.store.tables import ALL_QUEUES, ALL_TABLES
from devhost.queues import QueuePoller
from devhost.server import DevHost
from devstack.azurite import Azurite
from devstack.ports import free_port, wait_for_port
from devstack.process import ManagedProcess
from emulators.apim.server import ApimEmulator
from emulators.stripe.server import StripeEmulator

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class StackOptions:
    app_port: int = 0  # 0: a free port (`make run` asks for 7071, what `func start` uses)
    use_func: bool | None = None  # None: `func start` when Core Tools are on PATH, else the devhost
    stripe_port: int = 0
    apim_port: int = 0
    gateway_port: int = 0
    portal_port: int = 0
    report_lag_seconds: float = 0
    stripe_faults: Any = None
    apim_faults: Any = None
    run_queue_workers: bool = True


@dataclass
class LocalStack:
    options: StackOptions = field(default_factory=StackOptions)
    azurite: Azurite | None = None
    stripe: StripeEmulator | None = None
    apim: ApimEmulator | None = None
    app_host: DevHost | None = None  # when the app runs in this process
    func_process: ManagedProcess | None = None
    queue_workers: QueuePoller | None = None
    settings: dict[str, str] = field(default_factory=dict)
    _saved_env: dict[str, str | None] = field(default_factory=dict)
    _workdir: Path | None = None

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
        self.azurite = Azurite().start()

        delegation_key = base64.b64encode(secrets.token_bytes(64)).decode("ascii")
        self.apim = ApimEmulator(
            opts.apim_port, opts.gateway_port, opts.portal_port,
            delegation_url=f"{self.app_url}/api/delegation",
            delegation_key_b64=delegation_key,
            report_lag_seconds=opts.report_lag_seconds,
            faults=opts.apim_faults,
        ).start()  # fmt: skip
        webhook_secret = "whsec_" + secrets.token_hex(24)
        stripe_kwargs: dict[str, Any] = {"port": opts.stripe_port, "api_key": "sk_test_" + secrets.token_hex(12)}
        if opts.stripe_faults is not None:
            stripe_kwargs["faults"] = opts.stripe_faults
        self.stripe = StripeEmulator(**stripe_kwargs).start()
        self.stripe.add_webhook_endpoint(f"{self.app_url}/api/webhooks/stripe", webhook_secret)

        self.settings = {
            "AzureWebJobsStorage": self.azurite.connection_string,
            **self.stripe.app_settings(),
            "STRIPE_WEBHOOK_SECRET": webhook_secret,
            **self.apim.app_settings(),
            "APIM_DELEGATION_VALIDATION_KEY": delegation_key,
            "APP_BASE_URL": self.app_url,
            "DELEGATION_MODE": "full",
            "USAGE_REPORT_LAG_MINUTES": str(int(opts.report_lag_seconds // 60)),
        }
        self._apply_env(self.settings)
        self._ensure_storage()
        use_func = opts.use_func if opts.use_func is not None else shutil.which("func") is not None
        if use_func:
            self._start_func()
        else:
            self._start_devhost()

    def _apply_env(self, values: dict[str, str]) -> None:
        for key, value in values.items():
            self._saved_env.setdefault(key, os.environ.get(key))
            os.environ[key] = value

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

    def _start_devhost(self) -> None:
        self.app_host = DevHost(function_app.app, port=self._app_port).start()
        if self.options.run_queue_workers:
            # As the Functions host does: run the queue-triggered functions, poison after 5 tries.
            clients = {name: queue(name) for name in ALL_QUEUES}
            self.queue_workers = QueuePoller(function_app.app, clients).start()

    def _start_func(self) -> None:
        assert self._workdir is not None
        env = {**os.environ, **self.settings, "FUNCTIONS_WORKER_RUNTIME": "python"}
        self.func_process = ManagedProcess(
            "func", ["func", "start", "--port", str(self._app_port)],
            log_path=self._workdir / "func.log", env=env, cwd=REPO_ROOT,
        ).start()  # fmt: skip
        wait_for_port(self._app_port, timeout=120, alive=self.func_process.running)

    def stop(self) -> None:
        for part in (self.queue_workers, self.app_host, self.func_process, self.stripe, self.apim, self.azurite):
            if part is not None:
                with contextlib.suppress(Exception):  # stopping must go on for every other part
                    part.stop()
        self.queue_workers = self.app_host = self.func_process = self.stripe = self.apim = self.azurite = None
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved_env.clear()
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def urls(self) -> dict[str, str]:
        return {
            "Functions app": f"{self.app_url}/api/health",
            "Developer portal (APIM emulator)": self.apim.portal_url,
            "API gateway (APIM emulator)": self.apim.gateway_url,
            "Stripe emulator": self.stripe.base_url,
        }
