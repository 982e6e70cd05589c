"""The access area's real dependencies, built from settings once per process (per distinct settings).

Clients are reused across invocations: the APIM client caches its token, and the tables and queues
are created once (in Azure, infra creates them; locally Azurite starts empty).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping

from billing import bootstrap, config
from billing.access.limits import quota_resets, spending_limits
from billing.access.ports import AccessPorts
from billing.access.webhook import WebhookDeps
from billing.adapters.access_apim import ApimSubscriptionsAdapter
from billing.adapters.access_storage import ClosingUsageQueue, EventWorkQueue, ensure_queue
from billing.adapters.access_stripe import StripeSubscriptionsAdapter
from billing.adapters.apim_client import apim_service
from billing.adapters.mail_smtp import smtp_mailer
from billing.adapters.portal_apim import PortalApim
from billing.adapters.storage import ensure_table, queue
from billing.adapters.stripe_client import stripe_client, webhook_secrets
from billing.model_loader import load_models
from billing.models import MonetizationModels
from billing.portal.trials import TrialReminders
from billing.store.processed_events import ProcessedEvents
from billing.store.subscriptions import SubscriptionLinks
from billing.store.tables import (
    EVENT_WORK_QUEUE,
    PROCESSED_EVENTS_TABLE,
    SUBSCRIPTIONS_TABLE,
    TRIALS_TABLE,
    USAGE_BATCH_QUEUE,
)
from billing.store.trials import TrialLedger

log = logging.getLogger(__name__)
_lock = threading.Lock()
_cache: dict[tuple[tuple[str, str], ...], object] = {}
# The settings the clients depend on: a change (e.g. another test's emulators) builds new ones.
_KEYS = ("AzureWebJobsStorage", "STRIPE_API_KEY", "STRIPE_API_BASE", "APIM_MANAGEMENT_ENDPOINT",
         "APIM_SUBSCRIPTION_ID", "APIM_RESOURCE_GROUP", "APIM_SERVICE_NAME", "SMTP_HOST", "SMTP_PORT", "MAIL_SENDER",
         "APP_BASE_URL", "APIM_DEVELOPER_PORTAL_URL")  # fmt: skip


def _key(kind: str, env: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return (("kind", kind), *((k, env.get(k, "")) for k in _KEYS))


def _cached(kind: str, env: Mapping[str, str], build: object) -> object:
    key = _key(kind, env)
    with _lock:
        found = _cache.get(key)
    if found is not None:
        return found
    value = build() if callable(build) else build  # built outside the lock: it makes network calls
    with _lock:
        return _cache.setdefault(key, value)


def access_ports(env: Mapping[str, str] | None = None) -> AccessPorts:
    source = os.environ if env is None else env

    def build() -> AccessPorts:
        models = load_models()
        return AccessPorts(
            stripe=StripeSubscriptionsAdapter(stripe_client(source)),
            apim=ApimSubscriptionsAdapter(apim_service(source)),
            links=SubscriptionLinks(ensure_table(SUBSCRIPTIONS_TABLE, source)),
            usage=ClosingUsageQueue(ensure_queue(queue(USAGE_BATCH_QUEUE, source)), source),
            spending_limits=spending_limits(models),
            quota_resets=quota_resets(models),
            trials=TrialLedger(ensure_table(TRIALS_TABLE, source)),
            reminders=trial_reminders(models, source),
            free_products=frozenset(p.id for p in models.products if not p.is_paid),
        )

    ports = _cached("ports", source, build)
    assert isinstance(ports, AccessPorts)
    return ports


def trial_reminders(models: MonetizationModels, env: Mapping[str, str]) -> TrialReminders | None:
    """The reminder mail before a trial ends: to the APIM user's address, over the portal's SMTP settings.

    None when those settings are unusable: a mail setting must not stop the webhooks from granting keys (the
    reminder event is then acknowledged with the reason, and the error logged)."""
    try:
        mailer = smtp_mailer(env)
    except ValueError as exc:
        log.error("trial reminders cannot be sent: %s", exc)
        return None
    base, portal = config.get("APP_BASE_URL", env).rstrip("/"), config.get("APIM_DEVELOPER_PORTAL_URL", env)
    return TrialReminders(models, PortalApim(apim_service(env)).user_email, mailer,
                          billing_url=f"{base}/api/portal/billing", portal_url=portal.rstrip("/") + "/")


def processed_events(env: Mapping[str, str] | None = None) -> ProcessedEvents:
    source = os.environ if env is None else env
    found = _cached("events", source, lambda: ProcessedEvents(ensure_table(PROCESSED_EVENTS_TABLE, source)))
    assert isinstance(found, ProcessedEvents)
    return found


def event_work_queue(env: Mapping[str, str] | None = None) -> EventWorkQueue:
    source = os.environ if env is None else env
    found = _cached("work", source, lambda: EventWorkQueue(ensure_queue(queue(EVENT_WORK_QUEUE, source))))
    assert isinstance(found, EventWorkQueue)
    return found


def webhook_deps(env: Mapping[str, str] | None = None) -> WebhookDeps:
    source = os.environ if env is None else env
    return WebhookDeps(
        secrets=webhook_secrets(source),
        claims=lambda: processed_events(source),
        ports=lambda: access_ports(source),
        work_queue=lambda: event_work_queue(source),
    )


def forget_clients() -> None:
    """Drop the cached clients (tests that restart a service on the same settings)."""
    with _lock:
        _cache.clear()
    bootstrap.forget()

