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

import logging
import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar, cast

from billing import config

if TYPE_CHECKING:  # the SDKs load only when something is built
    import stripe
    from azure.data.tables import TableClient
    from azure.storage.queue import QueueClient

    from billing.access.ports import AccessPorts
    from billing.access.webhook import WebhookDeps
    from billing.adapters.access_storage import EventWorkQueue
    from billing.adapters.apim_client import ApimService
    from billing.models import MonetizationModels
    from billing.portal.deps import PortalDeps
    from billing.portal.trials import TrialReminders
    from billing.store.processed_events import ProcessedEvents
    from billing.usage.ports import UsageReports
    from billing.usage.push import UsagePush

T = TypeVar("T")
log = logging.getLogger(__name__)

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
        self._lock = threading.Lock()
        self._built: dict[str, object] = {}
        self._building: dict[str, threading.Lock] = {}  # one per key: a build waits only for its own key

    def _once(self, key: str, build: Callable[[], T]) -> T:
        """Two first uses of a key never build two clients; builds of other keys (a table's creation, a
        token) go on meanwhile, so a cold instance's first invocations do not queue behind one another."""
        with self._lock:
            if key in self._built:
                return cast(T, self._built[key])
            building = self._building.setdefault(key, threading.Lock())
        with building:
            with self._lock:
                if key in self._built:
                    return cast(T, self._built[key])
            made = build()  # may build other keys: their own locks
            with self._lock:
                self._built[key] = made
            return made

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
        from billing.adapters.usage_logs import log_analytics_usage  # noqa: PLC0415
        from billing.adapters.usage_reports import ApimUsageReports  # noqa: PLC0415
        from billing.usage.wiring import LOGS_REQUESTS_PER_SECOND, USAGE_SOURCES, bucket, tuning  # noqa: PLC0415

        def build() -> UsageReports:
            source = config.get("USAGE_SOURCE", self.env).strip().lower()
            if source == "logs":
                return log_analytics_usage(bucket("logs", LOGS_REQUESTS_PER_SECOND), self.env)
            if source == "reports":
                return ApimUsageReports(self.apim(), bucket("arm", tuning(self.env)[1]))
            raise ValueError(f"USAGE_SOURCE must be one of {', '.join(USAGE_SOURCES)}; got '{source}'")

        return self._once("usage_source", build)

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

    # --- the access area: webhooks, the event work queue, reconcile ----------------------------
    def access_ports(self) -> AccessPorts:
        from billing.access.limits import quota_resets, spending_limits  # noqa: PLC0415
        from billing.access.ports import AccessPorts  # noqa: PLC0415
        from billing.adapters.access_apim import ApimSubscriptionsAdapter  # noqa: PLC0415
        from billing.adapters.access_storage import ClosingUsageQueue, ensure_queue  # noqa: PLC0415
        from billing.adapters.access_stripe import StripeSubscriptionsAdapter  # noqa: PLC0415
        from billing.model_loader import load_models  # noqa: PLC0415
        from billing.store.subscriptions import SubscriptionLinks  # noqa: PLC0415
        from billing.store.tables import SUBSCRIPTIONS_TABLE, TRIALS_TABLE, USAGE_BATCH_QUEUE  # noqa: PLC0415
        from billing.store.trials import TrialLedger  # noqa: PLC0415

        def build() -> AccessPorts:
            models = load_models()
            return AccessPorts(
                stripe=StripeSubscriptionsAdapter(self.stripe()),
                apim=ApimSubscriptionsAdapter(self.apim()),
                links=SubscriptionLinks(self.table(SUBSCRIPTIONS_TABLE)),
                usage=ClosingUsageQueue(ensure_queue(self.queue(USAGE_BATCH_QUEUE)), self.env),
                spending_limits=spending_limits(models),
                quota_resets=quota_resets(models),
                trials=TrialLedger(self.table(TRIALS_TABLE)),
                reminders=trial_reminders(models, self.env, self.apim()),
                free_products=frozenset(p.id for p in models.products if not p.is_paid),
            )

        return self._once("access_ports", build)

    def processed_events(self) -> ProcessedEvents:
        from billing.store.processed_events import ProcessedEvents  # noqa: PLC0415
        from billing.store.tables import PROCESSED_EVENTS_TABLE  # noqa: PLC0415

        return self._once("processed_events", lambda: ProcessedEvents(self.table(PROCESSED_EVENTS_TABLE)))

    def event_work_queue(self) -> EventWorkQueue:
        from billing.adapters.access_storage import EventWorkQueue, ensure_queue  # noqa: PLC0415
        from billing.store.tables import EVENT_WORK_QUEUE  # noqa: PLC0415

        return self._once("event_work_queue", lambda: EventWorkQueue(ensure_queue(self.queue(EVENT_WORK_QUEUE))))

    def webhook_deps(self) -> WebhookDeps:
        """The webhook's secrets (read now: a rotation needs no restart) and its lazily built ports."""
        from billing.access.webhook import WebhookDeps  # noqa: PLC0415
        from billing.adapters.stripe_client import webhook_secrets  # noqa: PLC0415
        from billing.adapters.stripe_signature import signature_problem  # noqa: PLC0415

        return WebhookDeps(
            secrets=webhook_secrets(self.env),
            check=signature_problem,
            claims=self.processed_events,
            ports=self.access_ports,
            work_queue=self.event_work_queue,
        )

    # --- the portal ----------------------------------------------------------------------------
    def portal(self) -> PortalDeps:
        """The portal's dependencies; ConfigurationError names a missing or invalid setting (never its value)."""
        return self._once("portal", self._build_portal)

    def _build_portal(self) -> PortalDeps:
        from billing.adapters.access_storage import ensure_queue  # noqa: PLC0415
        from billing.adapters.final_invoice_queue import FinalInvoiceQueue  # noqa: PLC0415
        from billing.adapters.mail_smtp import smtp_mailer  # noqa: PLC0415
        from billing.adapters.portal_apim import PortalApim  # noqa: PLC0415
        from billing.adapters.portal_plan_change import PlanChanges  # noqa: PLC0415
        from billing.adapters.portal_stripe import PortalStripe  # noqa: PLC0415
        from billing.model_loader import load_models  # noqa: PLC0415
        from billing.portal.accounts import AccountPorts, PortalUrls  # noqa: PLC0415
        from billing.portal.delegation import decode_key  # noqa: PLC0415
        from billing.portal.deps import HASH_BUDGET, ConfigurationError, PortalDeps  # noqa: PLC0415
        from billing.portal.devices import DeviceCookies  # noqa: PLC0415
        from billing.portal.tokens import parse_session_keys  # noqa: PLC0415
        from billing.portal.web import Sessions  # noqa: PLC0415
        from billing.store.accounts import Accounts, UsedSalts  # noqa: PLC0415
        from billing.store.customers import CustomerDirectory  # noqa: PLC0415
        from billing.store.email_links import EmailLinks  # noqa: PLC0415
        from billing.store.tables import (  # noqa: PLC0415
            ACCOUNTS_TABLE,
            CUSTOMERS_TABLE,
            DELEGATION_SALTS_TABLE,
            EMAIL_TOKENS_TABLE,
            THROTTLES_TABLE,
            TRIALS_TABLE,
            USAGE_BATCH_QUEUE,
        )
        from billing.store.throttles import Throttles  # noqa: PLC0415
        from billing.store.trials import TrialLedger  # noqa: PLC0415

        env = {name: config.get(name, self.env) for name in _DECLARED}
        missing = [
            n
            for n in (
                "APIM_DELEGATION_VALIDATION_KEY",
                "PORTAL_SESSION_KEYS",
                "APP_BASE_URL",
                "APIM_DEVELOPER_PORTAL_URL",
            )
            if not env[n]
        ]
        if missing:
            raise ConfigurationError(f"the portal needs the settings {', '.join(missing)}")
        mode = env["DELEGATION_MODE"]
        if mode not in ("full", "subscriptions"):
            raise ConfigurationError(f"DELEGATION_MODE must be 'full' or 'subscriptions', not {mode!r}")
        try:
            key = decode_key(env["APIM_DELEGATION_VALIDATION_KEY"])
            session_keys = parse_session_keys(env["PORTAL_SESSION_KEYS"])
            usage = self.usage_source()
            mailer = smtp_mailer(self.env)
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from None
        base = env["APP_BASE_URL"].rstrip("/")
        portal_url = env["APIM_DEVELOPER_PORTAL_URL"].rstrip("/")
        secure = base.lower().startswith("https://")
        accounts = Accounts(self.table(ACCOUNTS_TABLE))
        apim = PortalApim(self.apim())
        work = ensure_queue(self.queue(USAGE_BATCH_QUEUE))
        return PortalDeps(
            delegation_key=key,
            session_keys=session_keys,
            sessions=Sessions(session_keys, secure=secure),
            devices=DeviceCookies(session_keys, secure=secure),
            app_base_url=base,
            portal_url=portal_url,
            mode=mode,
            models=load_models(),
            accounts=accounts,
            account_ports=AccountPorts(
                accounts=accounts,
                links=EmailLinks(self.table(EMAIL_TOKENS_TABLE)),
                throttles=Throttles(self.table(THROTTLES_TABLE)),
                mailer=mailer,
                apim=apim,
                hashing=HASH_BUDGET,
                urls=PortalUrls(base, portal_url),
            ),
            apim=apim,
            payments=PortalStripe(self.stripe(), CustomerDirectory(self.table(CUSTOMERS_TABLE))),
            salts=UsedSalts(self.table(DELEGATION_SALTS_TABLE)),
            final_invoices=FinalInvoiceQueue(work),
            usage=usage,
            trials=TrialLedger(self.table(TRIALS_TABLE)),
            plan_changes=PlanChanges(self.stripe(), self.apim(), work),
        )


def trial_reminders(models: MonetizationModels, env: Mapping[str, str], apim: ApimService) -> TrialReminders | None:
    """The reminder mail before a trial ends: to the APIM user's address, over the portal's SMTP settings.

    None when those settings are unusable: a mail setting must not stop the webhooks from granting keys (the
    reminder event is then acknowledged with the reason, and the error logged)."""
    from billing.adapters.mail_smtp import smtp_mailer  # noqa: PLC0415
    from billing.adapters.portal_apim import PortalApim  # noqa: PLC0415
    from billing.portal.trials import TrialReminders  # noqa: PLC0415

    try:
        mailer = smtp_mailer(env)
    except ValueError as exc:
        log.error("trial reminders cannot be sent: %s", exc)
        return None
    base, portal = config.get("APP_BASE_URL", env).rstrip("/"), config.get("APIM_DEVELOPER_PORTAL_URL", env)
    return TrialReminders(
        models,
        PortalApim(apim).user_email,
        mailer,
        billing_url=f"{base}/api/portal/billing",
        portal_url=portal.rstrip("/") + "/",
    )


def configure_telemetry(env: Mapping[str, str] | None = None) -> bool:
    """Export to Application Insights when its connection string is set; True if it was turned on."""
    source = os.environ if env is None else env
    connection = source.get("APPLICATIONINSIGHTS_CONNECTION_STRING", "").strip()
    if not connection:
        return False
    from azure.monitor.opentelemetry import configure_azure_monitor  # noqa: PLC0415 - only in Azure

    credential = None
    if "Authorization=AAD" in source.get("APPLICATIONINSIGHTS_AUTHENTICATION_STRING", ""):
        from azure.identity import ManagedIdentityCredential  # noqa: PLC0415

        # The component takes Entra ID tokens only (infra/modules/monitoring.bicep: local auth off).
        client_id = source.get("AZURE_CLIENT_ID", "").strip() or None
        credential = ManagedIdentityCredential(client_id=client_id)
    # logger_name: only the app's own loggers become traces (the SDKs' request logs would repeat the spans).
    configure_azure_monitor(
        connection_string=connection, credential=credential, logger_name="billing", enable_live_metrics=False
    )
    log.info("telemetry: exporting to Application Insights")
    return True


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
