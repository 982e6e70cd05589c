"""The composition root: every outside client and adapter the app uses is built here, from the
settings that `billing/config.py` declares, once per process, and reused across invocations.

`services()` gives the `Services` of the current settings. The Functions entry points, the CLI, the
local stack and the benchmarks all take their dependencies from it, so what a benchmark measures is
the wiring production runs. Clients are built lazily (a CLI command that needs only Stripe never
builds an APIM client) and at most once per settings: a change of settings (a test that starts
other emulators) gives a new `Services`; `forget()` drops them all (a test that restarts a service
on the same settings). The catalog's adapters are the operator's, not the app's (a CLI command run
with the operator's identity): `billing.catalog.wiring` builds them on these clients.

Azure SDK clients and the Stripe client are safe to share between threads, and so are the
adapters built on them (the usage push's batches run side by side on one `UsagePush`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from billing import config

if TYPE_CHECKING:  # the SDKs load only when something is built
    import stripe
    from azure.data.tables import TableClient
    from azure.storage.queue import QueueClient

    from billing.adapters.apim_client import ApimService
    from billing.usage.ports import UsageReports
    from billing.usage.push import UsagePush

T = TypeVar("T")

# Beyond the declared settings, what the SDKs read from the environment to find an identity.
_IDENTITY_PREFIXES = ("AzureWebJobsStorage", "AZURE_", "IDENTITY_", "MSI_", "REQUESTS_CA_BUNDLE", "SSL_CERT_")
_DECLARED = frozenset(s.name for s in config.SETTINGS)


def fingerprint(env: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """The settings a client may depend on: equal fingerprints share their clients."""
    return tuple(sorted((k, v) for k, v in env.items() if k in _DECLARED or k.startswith(_IDENTITY_PREFIXES)))


class Services:
    """The clients and adapters of one set of settings, each built on first use."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env: Mapping[str, str] = dict(env)
        self._lock = threading.RLock()
        self._built: dict[str, object] = {}

    def _once(self, key: str, build: Callable[[], T]) -> T:
        with self._lock:  # held while building: two first uses never build two clients
            if key not in self._built:
                self._built[key] = build()
            return self._built[key]  # type: ignore[return-value]

    # --- clients of the outside services ------------------------------------------------------
    def stripe(self) -> stripe.StripeClient:
        from billing.adapters.stripe_client import stripe_client  # noqa: PLC0415

        return self._once("stripe", lambda: stripe_client(self.env))

    def apim(self) -> ApimService:
        from billing.adapters.apim_client import apim_service  # noqa: PLC0415

        return self._once("apim", lambda: apim_service(self.env))

    def table(self, name: str) -> TableClient:
        """The table's client; the table is created on first use if missing (infra creates it in Azure)."""
        from billing.adapters.storage import ensure_table  # noqa: PLC0415

        return self._once(f"table:{name}", lambda: ensure_table(name, self.env))

    def queue(self, name: str) -> QueueClient:
        from billing.adapters.storage import queue  # noqa: PLC0415

        return self._once(f"queue:{name}", lambda: queue(name, self.env))

    # --- the usage push -----------------------------------------------------------------------
    def usage_source(self) -> UsageReports:
        """Where usage is read (USAGE_SOURCE): the gateway logs in Log Analytics, or the Reports API."""
        from billing.usage.wiring import usage_source  # noqa: PLC0415

        return self._once("usage_source", lambda: usage_source(self.env))

    def usage_push(self) -> UsagePush:
        """The process's push, shared by every invocation (its budgets and shard memory with it)."""
        return self._once("usage_push", self.new_usage_push)

    def new_usage_push(self, models_file: Path | str | None = None) -> UsagePush:
        """A push of its own (a CLI run on another models file; a test that sets its hooks), on the
        shared clients and the process-wide rate budgets."""
        from billing.adapters.usage_meter import StripeMeterCounts, StripeMeterSender  # noqa: PLC0415
        from billing.model_loader import load_models  # noqa: PLC0415
        from billing.store.subscriptions import SubscriptionLinks  # noqa: PLC0415
        from billing.store.tables import SUBSCRIPTIONS_TABLE, USAGE_WATERMARKS_TABLE  # noqa: PLC0415
        from billing.store.watermarks import Watermarks  # noqa: PLC0415
        from billing.usage.push import UsagePush  # noqa: PLC0415
        from billing.usage.wiring import bucket, lag_seconds, tuning  # noqa: PLC0415

        stripe_rps, _arm_rps, batch_size = tuning(self.env)
        stripe_budget = bucket("stripe", stripe_rps)  # per process, shared by every push
        return UsagePush(
            models=load_models(models_file),
            reports=self.usage_source(),
            meter=StripeMeterSender(self.stripe(), stripe_budget),
            counts=StripeMeterCounts(self.stripe(), stripe_budget),
            watermarks=Watermarks(self.table(USAGE_WATERMARKS_TABLE)),
            links=SubscriptionLinks(self.table(SUBSCRIPTIONS_TABLE)),
            lag_seconds=lag_seconds(self.env),
            batch_size=batch_size,
        )


_lock = threading.Lock()
_services: dict[tuple[tuple[str, str], ...], Services] = {}


def services(env: Mapping[str, str] | None = None) -> Services:
    """The `Services` of these settings (the process environment by default)."""
    source = os.environ if env is None else env
    key = fingerprint(source)
    with _lock:
        found = _services.get(key)
        if found is None:
            found = _services[key] = Services(source)
        return found


def forget() -> None:
    """Drop every built client (tests that restart a service on the same settings)."""
    with _lock:
        _services.clear()
